"""What people run: the ``lsb`` CLI and its commands, the Gradio demo, export, translation jobs."""
