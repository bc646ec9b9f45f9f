"""The local web app (`mmfm serve`): it calls the same workflows as the CLI and holds no model logic."""
