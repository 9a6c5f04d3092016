"""What training and evaluation read: the synthetic degradation, seeded training samples, registered
HR/LR pairs on disk and G's learned-degradation LR sets. Never imports training, serving or judging."""
