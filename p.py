import cProfile, pstats, time, sys, io
import torch
import depthlab.study as s
s._freeze_imported()
from depthlab import tracking
tracking.import_mlflow()
uri = "http://127.0.0.1:5077"
study = tracking.StudyRun(**{"tracking_uri": uri, "experiment_id": sys.argv[1], "parent_run_id": sys.argv[2]})
pr = cProfile.Profile()
t = time.perf_counter()
pr.enable()
run, _ = tracking.open_trial_run(study, "t" + str(time.time()), "x", {"method": {"lr": 1, "a": 2}, "train": {"b": 3}}, {"depthlab.study": "p"})
pr.disable()
print("open_trial_run", time.perf_counter() - t)
st = io.StringIO(); pstats.Stats(pr, stream=st).sort_stats("cumulative").print_stats(25); print(st.getvalue()[:6000])
