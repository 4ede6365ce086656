"""Step images: recipes and their content hash (``recipe``), which step runs in which
image and the pinned IR (``plan``), the registry (``registry``), the engine
(``engine``) and ``kfops build`` itself (``build``). Knows nothing of GitHub."""
