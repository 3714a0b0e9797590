"""ktx serve: OpenAI- and Ollama-compatible HTTP APIs and a web UI over the runtime."""
