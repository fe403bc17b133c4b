"""The six container checks of ci/bench/bench_reframe.sh, written the way a ReFrame user would:
one RunOnlyRegressionTest each, run in the image through ReFrame's Apptainer container platform."""
import os

import reframe as rfm
import reframe.utility.sanity as sn

IMAGE = os.environ['BENCH_IMAGE']
BIND_DIR = os.environ['BENCH_BIND_DIR']          # holds a file 'probe.txt'
VAR_VALUE = os.environ['BENCH_VAR']              # the host variable the container must see


class ContainerCheck(rfm.RunOnlyRegressionTest):
    valid_systems = ['*']
    valid_prog_environs = ['*']
    container_platform = 'Apptainer'
    command = variable(str)
    expect = variable(str)

    @run_after('setup')
    def set_container(self):
        self.container_platform.image = IMAGE
        self.container_platform.command = self.command
        self.container_platform.mount_points = [(BIND_DIR, '/bench-bind')]

    @sanity_function
    def check(self):
        return sn.assert_found(self.expect, self.stdout)


@rfm.simple_test
class PythonVersion(ContainerCheck):
    command = 'python3 --version'
    expect = r'^Python 3\.'


@rfm.simple_test
class ImportPytest(ContainerCheck):
    command = "python3 -c 'import pytest; print(\"ok\")'"
    expect = r'^ok$'


@rfm.simple_test
class ImportMpi4py(ContainerCheck):
    command = "python3 -c 'import mpi4py; print(\"ok\")'"
    expect = r'^ok$'


@rfm.simple_test
class BoundFileReadable(ContainerCheck):
    command = 'cat /bench-bind/probe.txt'
    expect = r'^bench$'


@rfm.simple_test
class HostVariablePassed(ContainerCheck):
    command = 'printenv BENCH_VAR'
    expect = '^' + VAR_VALUE + '$'


@rfm.simple_test
class NvidiaSmiAbsent(ContainerCheck):
    command = "sh -c 'command -v nvidia-smi || echo absent'"
    expect = r'^absent$'
