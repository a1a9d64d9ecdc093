"""Vicuna-80 generation task (answers for ``selfalign judge``)."""
