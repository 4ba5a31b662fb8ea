"""GitOps orchestrator for WebAssembly microservices on Wasm-IoT devices."""

__version__ = "0.1.0"
