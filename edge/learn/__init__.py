"""The learning loop on the device: feedback, collection, retrain, shadow, promote and roll back."""
