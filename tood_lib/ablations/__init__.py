"""The paper's ablations as data: the grid of experiments, the backbone they start from at CPU
scale, the runner that trains them (resumable), and the tables that set our numbers beside the paper's."""
