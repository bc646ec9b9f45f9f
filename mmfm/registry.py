"""One small generic registry (register, get, build, list) used by every layer of mmfm.

Concrete classes are wired together by name in config files; no ``if name == ...`` chains elsewhere.

Options are checked against the factory's signature before it is called: a typo (``mask_raito``) is an error
with a "did you mean" hint, never silently ignored. Factories therefore take explicit keyword arguments and no
``**kwargs``; the registry refuses to register one that does (a test runs over every registry).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable
from typing import Any, Generic, TypeVar

from mmfm.errors import ConfigError, UnknownNameError, unknown_option

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps names to factories (classes or functions).

    >>> ENCODERS = Registry("encoder")
    >>> @ENCODERS.register("tiny")
    ... def tiny(dim: int = 8): ...
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, Callable[..., T]] = {}

    def register(self, name: str | None = None) -> Callable[[Callable[..., T]], Callable[..., T]]:
        def wrap(factory: Callable[..., T]) -> Callable[..., T]:
            key = name or factory.__name__
            if key in self._items:
                raise ValueError(f"{self.kind} '{key}' is registered twice")
            params = inspect.signature(factory).parameters.values()
            if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
                raise TypeError(f"{self.kind} '{key}': factories must list their options (no **kwargs), so that "
                                "a typo in a config is caught")
            self._items[key] = factory
            return factory

        return wrap

    def get(self, name: str) -> Callable[..., T]:
        if name not in self._items:
            raise UnknownNameError(self.kind, name, self._items)
        return self._items[name]

    def options(self, name: str) -> list[str]:
        """The keyword options the factory of ``name`` accepts."""
        params = inspect.signature(self.get(name)).parameters.values()
        return [p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]

    def accepts(self, name: str, option: str) -> bool:
        return option in self.options(name)

    def check_options(self, name: str, given: Iterable[str], where: str = "") -> None:
        """Raise :class:`ConfigError` naming the first option the factory does not take, with the closest one."""
        valid = self.options(name)
        for key in given:
            if key not in valid:
                raise unknown_option(f"{where}.{key}" if where else key, key, valid, f"{self.kind} '{name}'")

    def check_required(self, name: str, given: Iterable[str], where: str = "") -> None:
        """Raise :class:`ConfigError` naming a required option (no default) that is not given."""
        params = inspect.signature(self.get(name)).parameters.values()
        missing = [p.name for p in params if p.default is inspect.Parameter.empty
                   and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.name not in set(given)]
        if missing:
            label = f"{where}.{missing[0]}" if where else missing[0]
            raise ConfigError(f"{self.kind} '{name}' needs the option '{label}'", f"required: {missing}")

    def build(self, name: str, /, **kwargs: Any) -> T:
        self.check_options(name, kwargs, self.kind)
        self.check_required(name, kwargs, self.kind)
        return self.get(name)(**kwargs)

    def build_with(self, name: str, options: dict[str, Any], context: dict[str, Any], where: str = "") -> T:
        """Build from user ``options`` (checked strictly) plus ``context`` the caller knows (image size, number
        of classes, ...), of which only what the factory takes is passed; the user's options win."""
        self.check_options(name, options, where or self.kind)
        accepted = set(self.options(name))
        kwargs = {**{k: v for k, v in context.items() if k in accepted}, **options}
        self.check_required(name, kwargs, where or self.kind)
        return self.get(name)(**kwargs)

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items
