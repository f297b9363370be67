"""The desktop program (``xnet-viewer``) and the ``xnet`` command: thin layers over xnet_core."""
