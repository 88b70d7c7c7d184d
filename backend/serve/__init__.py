"""The long-lived worker: ``python -m backend serve --inbox DIR`` loads a diffusion model once and
runs job after job through the same code as ``backend run`` (``backend/runner.py``).

* ``model_cache``  one loaded model, reused while the next job asks for the same one;
* ``inbox``        the inbox folder: claim a submission, report it done, re-queue dead claims
                   (file names and documents: ``blender_piva/contract/worker_inbox.py``);
* ``worker``       the loop: claim, run, report; stop, release, idle timeout, SIGTERM.
"""
