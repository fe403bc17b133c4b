# ReFrame configuration for ci/bench/bench_reframe.sh: this machine as one local partition with
# Apptainer as its container platform (ReFrame's own "local" scheduler and launcher, so ReFrame pays
# no batch-system cost either).
site_configuration = {
    'systems': [{
        'name': 'bench',
        'descr': 'contprobe benchmark machine',
        'hostnames': ['.*'],
        'partitions': [{
            'name': 'default',
            'scheduler': 'local',
            'launcher': 'local',
            'environs': ['builtin'],
            'container_platforms': [{'type': 'Apptainer'}],
        }],
    }],
    'environments': [{'name': 'builtin', 'cc': 'cc', 'cxx': '', 'ftn': ''}],
    'logging': [{
        'handlers': [{'type': 'stream', 'name': 'stdout', 'level': 'info', 'format': '%(message)s'}],
    }],
}
