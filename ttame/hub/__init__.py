"""Heads on disk and on the Hugging Face Hub.

- :mod:`ttame.hub.client`: cache-first, fail-fast access to Hub files, and Hub references;
- :mod:`ttame.hub.card`: the model card every saved head carries;
- :mod:`ttame.hub.heads`: the one writer of head folders (atomic, refuses NaN) and its reader;
- :mod:`ttame.hub.convert`: the reference implementation's checkpoints as heads;
- :mod:`ttame.hub.load`: a head from any source (folder, repo, ``hf://``, ``.ckpt``).

This package's own module imports nothing, so that low layers may use the client alone.
"""
