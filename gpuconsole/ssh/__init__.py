"""SSH transport: one kept-open asyncssh connection per node running the node agent."""

from gpuconsole.ssh.quietimport import import_asyncssh

# Before any submodule's `import asyncssh`: the import then starts no ldconfig/gcc/ld (see quietimport).
import_asyncssh()
