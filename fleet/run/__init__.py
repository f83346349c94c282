"""What the commands do, driven from one process: `train.py` (`fleet train`: the job driver),
`watch.py` (its loop while the fleet trains), `pretrain.py` (the BC base), `evaluate.py`
(`fleet pretrain`), `serial.py` (the same loop without Ray, for tests and benchmarks),
`reward_eval.py` (`fleet reward-eval`), `metrics.py` (wandb), `view.py` (the terminal's live
view)."""
