"""The language model as the agent: environments (`env`), tools (Python runs in `tandem.sandbox`), text games.

Importing the package registers the env kinds of its modules (``tools``, ``textarena``, ``textworld``, ``openenv``, ``worldmodel``) with
`tandem.lm_as_agent.env.make_env_suite`; the modules import their libraries only when an env is built.
"""

from tandem.lm_as_agent import imagined, openenv, textgames, tools  # noqa: F401 - register their env kinds
