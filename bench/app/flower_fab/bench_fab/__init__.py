"""The Flower App of `bench flower-run` (bench.app.flower_deploy)."""
