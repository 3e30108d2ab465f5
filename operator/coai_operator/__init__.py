"""coai-operator: run CoAI on Kubernetes and upgrade it safely."""

__version__ = "0.1.0"
