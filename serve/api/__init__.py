"""HTTP routes: thin layers that translate a protocol (TGI, OpenAI, admin) to the chat service and engine."""
