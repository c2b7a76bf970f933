"""Not a test: the training script ``test_train_ddp`` starts under ``accelerate launch``.

``python ddp_worker.py OUTPUT PIDS_DIR MAX_STEPS [slow]``: ``fit`` on test_train's in-test source
(margin-mse, 4 groups per step), with the tiny model's dropout off so that a two-process run can
be compared with a one-process run step by step (dropout draws differ per process by design).
Each process writes its pid to ``PIDS_DIR/rank<N>`` so a test can kill one rank.
"""

import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import test_train  # noqa: E402

from cerepro.model import backbones  # noqa: E402
from cerepro.training import losses

NO_DROPOUT = {"hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0}


def config(max_steps: int):
    return test_train.config("margin-mse", max_steps=max_steps, batch_size=4, log_every=1, checkpoint_every=3)


def main() -> None:
    # here, not at import: test_train_ddp imports this module into the test process, whose other
    # tests train the tiny model with its dropout
    backbones.TINY_BERT_FAMILY = {**backbones.TINY_BERT_FAMILY, **NO_DROPOUT}
    output, pids, max_steps = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
    if sys.argv[4:] == ["slow"]:  # slow steps, so that a kill lands mid-run
        loss = losses.margin_mse

        def delayed(*args, **kwargs):
            time.sleep(0.3)
            return loss(*args, **kwargs)

        losses.margin_mse = delayed  # resolved through the objective's record when the run starts
    pids.mkdir(parents=True, exist_ok=True)
    (pids / f"rank{os.environ.get('RANK', '0')}").write_text(str(os.getpid()))
    test_train.train(config(max_steps), output)


if __name__ == "__main__":
    main()
