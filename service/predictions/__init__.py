"""Pass-rate predictions for stored prompts or raw texts, and the run's current predictor."""
