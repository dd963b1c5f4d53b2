"""Flow tests: ``*.test.yaml`` files run offline against mocked webhooks.

* :mod:`~flowrunner.testing.suite` loads and checks a test file (schema, then the flow,
  the mocked ``WEBHOOK.METHOD`` names and the expected step ids);
* :mod:`~flowrunner.testing.mocks` answers webhook calls at the HTTP send seam, so the
  real engine and the real request building run and nothing leaves the machine;
* :mod:`~flowrunner.testing.match` compares expectations with what happened;
* :mod:`~flowrunner.testing.cases` runs the cases, :mod:`~flowrunner.testing.coverage`
  counts the steps and branches they reached, :mod:`~flowrunner.testing.output` prints
  the results (text, json, junit, github);
* :mod:`~flowrunner.testing.record` turns a real run into a case (``run --record``).
"""

from __future__ import annotations
