"""Training: the profile (one validated object per configs/*.yaml), the one loop, its stages (teacher,
co-learning), the loss terms, G's noise and paired fits, step timing and training curves."""
