"""Tables 2–5 from MLflow (``tables``), their renderers (``render``), figures, and the CLIs (``cli``)."""
