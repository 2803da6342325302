"""Stand-ins for what the project talks to, shared by tests/ and bench/: the OpenAI-wire LLM
server, an OTLP receiver, moto's SQS server, and an SSE client for the events endpoint."""
