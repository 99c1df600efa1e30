"""The engines behind an agent: local and hosted STT, TTS and LLM, one module each.

`whisper_stt` (faster-whisper tiny.en, in process), `piper_tts` (Piper, in its own
process because it is GPL), `espeak_tts` (the espeak-ng program), `hosted`
(pipecat's Deepgram, OpenAI, ElevenLabs and Cartesia services), `openai_llm` (any
OpenAI-compatible endpoint) and `scripted_llm` (the policy that runs when no LLM is
configured); `utterance_tts` is the base of the TTS engines that return a whole
utterance. `callfleet.agent.engines.LocalEngines` picks them from `ProviderSettings`.
"""
