"""Item-text encoders and the embedding cache (imported as ``interestgym.encoders``)."""
