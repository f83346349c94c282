"""The learner loop: sample, label rewards, update, publish versioned weights, checkpoint."""
