"""Which run config keys change what a run produces: the keys that change neither the trained
weights nor the results (resources and logging), those only an evaluation reads, and together the
keys a run may resume with other values of.

Plain sets of key names, no imports: the checkpoints (what a resume may differ in) and the grid
(which finished runs are stale) read the same lists.
"""

# Keys that change neither a trained model nor its results: resources and logging.
RESOURCE_KEYS = frozenset(
    {
        "log_every",
        "checkpoint_every",
        "gpus",
        "processes",
        "cpus",
        "mem_gb",
        "runtime_min",
        "compile",
        "gradient_checkpointing",
        "profile",
    }
)
# Keys an evaluation reads and training does not.
EVALUATION_KEYS = frozenset({"eval_datasets", "first_stage", "candidate_depth"})
# Keys that do not change the trained weights: a run may resume with other values.
OPERATIONAL_KEYS = RESOURCE_KEYS | EVALUATION_KEYS
