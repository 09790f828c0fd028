# A TopK LM on the planted-concept corpus (python prepare.py concepts): 1-2.5 minutes on a 2-core CPU.
# The corpus is ground truth for neurons (analyze.py), steering (steer.py) and their evolution.
# The dense twin for comparison: the same command with --topk=0 --out_dir=out-concepts-dense.
out_dir = 'out-concepts-topk'
dataset = 'concepts'
eval_interval = 100
eval_iters = 20
log_interval = 20
ckpt_interval = 100  # series: 0, 1, 2, 4, ..., 512, and every 100 iterations: 17 snapshots

batch_size = 32
block_size = 64  # a line is two to four sentences of about ten words

n_layer = 4
n_head = 4
n_embd = 128
dropout = 0.0
# k=16 of 128 keeps an eighth of the residual stream: enough for the ten concepts plus syntax, and
# sparse enough that single neurons specialise. The last block stays dense, as in the paper, so
# the model can mix the sparse code back into next-token predictions.
topk = 16
n_nontopk = 1

learning_rate = 2e-3
max_iters = 600  # the loss is flat after about 300
lr_decay_iters = 600
min_lr = 2e-4
warmup_iters = 50
beta2 = 0.99
