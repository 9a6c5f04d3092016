"""How results are judged: full-reference metrics, the metric registry and scoring pass, LPIPS offline,
the content-normalised blur estimate and the one rule for wording a comparison."""
