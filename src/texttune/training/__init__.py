"""The one training loop every model and strategy goes through."""
