"""A rich progress bar over optimizer steps, shown by the main process only."""

from __future__ import annotations

from typing import Any

from harness.common.progress_bar import progress_bar


class StepProgress:
    """``with StepProgress(enabled, total, done) as advance: advance(step_record)``; a no-op when disabled."""

    def __init__(self, enabled: bool, total: int, completed: int):
        self.enabled, self.total, self.completed = enabled, total, completed
        self._progress: Any = None

    def __enter__(self) -> StepProgress:
        if self.enabled:
            self._progress = progress_bar(
                "[bold]LoRA steps", extra="loss {task.fields[loss]}  lr {task.fields[lr]}"
            )
            self._progress.start()
            self._task = self._progress.add_task("train", total=self.total, completed=self.completed, loss="-", lr="-")
        return self

    def __call__(self, record: dict[str, Any]) -> None:
        if self._progress is not None:
            self._progress.update(self._task, advance=1, loss=f"{record['loss']:.4f}", lr=f"{record['lr']:.2e}")

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()
