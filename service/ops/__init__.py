"""Operating it: metrics, structured logs and what each request leaves behind."""
