"""Named styles: reference images and style packs (``styles/`` folder, ``streamfx styles``).

One format for the whole project. In the styles folder a style is either

* a single image ``NAME.png|jpg|jpeg|webp|bmp``: its reference image, or
* a folder ``NAME/`` holding ``reference.png`` and ``style.json`` (what made it), plus
  ``adapter.safetensors`` for a trained style (:mod:`.pack`).

:class:`~.library.StyleLibrary` lists and reads them; two styles with one name are refused.
"""

from .library import StyleError, StyleLibrary, default_styles_dir, match_name
from .pack import Style

__all__ = ["Style", "StyleError", "StyleLibrary", "default_styles_dir", "match_name"]
