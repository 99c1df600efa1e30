"""The engines behind an agent: local and hosted STT, TTS and LLM, one module each.

`whisper_stt` (faster-whisper tiny.en, in process), `piper_tts` (Piper, in its own
process because it is GPL), `espeak_tts` (the espeak-ng program), `openai_llm`
(any OpenAI-compatible endpoint) and `scripted_llm` (the policy that runs when no
LLM is configured). `callfleet.agent.factory` picks them from `ProviderSettings`.
"""
