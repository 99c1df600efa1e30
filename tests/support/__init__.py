"""Test harness and evaluation data shared by the tests and the benchmarks.

Importable as `tests.support.<module>`: pytest puts the repository root on
`sys.path` (`pythonpath = ["."]`), and `benchmarks/` scripts insert it themselves.

- `openai_server`: `FakeOpenAIServer`, a real HTTP server speaking the OpenAI
  chat-completions protocol, and `ToolCall`, a reply of it that calls a tool.
- `phone_line`: `PhoneLine`, the scripted callee's end of a `CallAudio`
  (`Say` / `WaitForAgent` / `Pause`).
- `speech_sets`: phone-channel audio (`phone_channel`, `espeak_phone_audio`),
  `word_error_rate`, and `amd_labelled_set`, the labelled calls the
  answering-machine detector is measured on.

The fakes a user of the package would import (`FakeEngines` and its parts,
`EnergyVAD`) stay in `callfleet.agent.testing`.
"""
