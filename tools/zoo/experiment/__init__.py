"""The zoo's experiment harness: map where merging starts to work at toy scale.

``prepare`` renders every task split, the pretraining corpus and the in-domain slices once into a cache directory
(this needs the zoo's Debian packages and merge-rs); ``run`` trains and measures one or more settings from that cache
on any torch device, without merge-rs installed (so a GPU machine with torch and transformers can run it); ``report``
turns the results into the tables of ``EXPERIMENTS.md`` and the pictures of ``docs/zoo.md``. ``probe`` asks a quicker
question of one task: how far a built zoo's pretrained model fine-tunes on it, class by class.

    python -m tools.zoo.experiment prepare CACHE --pretrain-slice 1500
    python -m tools.zoo.experiment run CACHE --out results/ --name wide --set hidden=128
    python -m tools.zoo.experiment grid CACHE grid.json --out results/ --workers 8 --device cuda
    python -m tools.zoo.experiment report results/ --table EXPERIMENTS-table.md --plots docs/
    python -m tools.zoo.experiment probe python/merge_rs/zoo/data --task scripts --out probe.json --set finetune_steps=2500
"""
