"""Jobs: training flow runs of the `retrain/training` deployment, read and driven through Prefect."""
