"""What needs torch around CLIP: model pools (``pool``), tasks and their prompts (``tasks``), datasets
(``data``), model loading (``models``), zero-shot heads (``heads``), evaluation with FusionBench's reports
(``evaluate``) and the demo (``demo``). Nothing here imports torch until it is used."""
