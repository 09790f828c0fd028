# The dense twin: nanoGPT's shakespeare_char settings (a 10.7M-parameter GPT, a few minutes on one GPU),
# on the complete works (python prepare.py shakespeare_char). Compare with train_shakespeare_char_topk.py.
out_dir = 'out-shakespeare-char'
eval_interval = 250
eval_iters = 200
log_interval = 10
ckpt_interval = 1000

dataset = 'shakespeare_char'
gradient_accumulation_steps = 1
batch_size = 64
block_size = 256  # context of up to 256 previous characters

n_layer = 6
n_head = 6
n_embd = 384
dropout = 0.2
topk = 0  # dense

learning_rate = 1e-3  # small models tolerate a high rate
max_iters = 5000
lr_decay_iters = 5000
min_lr = 1e-4
beta2 = 0.99  # few tokens per step: a shorter second-moment memory
warmup_iters = 100
