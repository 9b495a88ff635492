"""Stage 3, scoring a selected cell: the scorer contract, retraining from scratch, parameter and MAC counts."""
