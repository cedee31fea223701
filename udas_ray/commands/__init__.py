"""The jobs, each a ``main(argv=None)``: the console scripts ``udas-train`` (self_train),
``udas-predict`` (predict), ``udas-sweep`` (sweep) and ``udas-budgets`` (data_dependency), and the
files of the same names in a checkout's ``jobs/``."""
