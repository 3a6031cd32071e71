"""One campaign's rounds: the step context, round inputs and files, the control arm, sharded
embedding, evaluation, MLflow tracking, export and comparison."""
