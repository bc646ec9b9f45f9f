"""The thin `mmfm` command line: parse, load config, call one library function."""
