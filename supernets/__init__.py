"""Search spaces shipped with selbench, registered through the ``selbench`` entry points."""
