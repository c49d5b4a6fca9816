"""Stage 1, data: list/read/preprocess images (``images``), the training ``PyDataset`` (``dataset``),
augmentation (``augment``), the MVTec AD layout (``mvtec``) and synthetic sample data (``synthetic``).

Sub-package ``__init__`` files import nothing, so importing one module never loads its siblings.
"""
