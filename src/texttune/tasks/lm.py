"""What the language-model kinds (``mlm``, ``sft``) share: the saved model is a plain Hugging Face
folder with its tokenizer, and the report is the learning curves plus the kind's page."""

from __future__ import annotations

from pathlib import Path

from texttune import runs


class LanguageModelTask:
    """Base of the ``mlm`` and ``sft`` tasks (``runs.Task``): the steps they do alike."""

    def save_model(self, trainer, tokenizer, run_dir: Path):
        """``run_dir/model``: the trained model and its tokenizer (``save_pretrained``), written by the
        main process alone (N processes: see runs.py); the model."""
        model = trainer.accelerator.unwrap_model(trainer.model)
        if trainer.accelerator.is_main_process:
            runs.save_model_folder(run_dir, lambda folder: (model.save_pretrained(folder),
                                                            tokenizer.save_pretrained(folder)))
        return model

    def report(self, run_dir: Path) -> None:
        from texttune.reports.html import render_report
        from texttune.reports.plots import plot_learning_curves

        plot_learning_curves(runs.read_records(run_dir), run_dir / runs.LEARNING_CURVES)
        render_report(run_dir)
