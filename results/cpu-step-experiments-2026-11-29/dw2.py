import time, statistics, jax, jax.numpy as jnp, numpy as np
from functools import partial
DN = ("NHWC","HWIO","NHWC")
cr = (((0,),(0,)),((),()))
def taps(x, dy):
    B,H,W,C = x.shape; O = dy.shape[-1]
    xp = jnp.pad(x, ((0,0),(1,1),(1,1),(0,0)))
    return jnp.stack([jax.lax.dot_general(xp[:, i:i+H, j:j+W].reshape(-1, C), dy.reshape(-1, O), cr) for i in range(3) for j in range(3)]).reshape(3,3,C,O)
def im2col(x, dy):
    B,H,W,C = x.shape; O = dy.shape[-1]
    xp = jnp.pad(x, ((0,0),(1,1),(1,1),(0,0)))
    cols = jnp.concatenate([xp[:, i:i+H, j:j+W] for i in range(3) for j in range(3)], -1).reshape(-1, 9*C)
    return jax.lax.dot_general(cols, dy.reshape(-1, O), cr).reshape(3,3,C,O)
def micro(x, dy, m=8):
    B = x.shape[0]
    xs = x.reshape(B//m, m, *x.shape[1:]); ds = dy.reshape(B//m, m, *dy.shape[1:])
    def body(acc, a): return acc + taps(*a), None
    return jax.lax.scan(body, jnp.zeros((3,3,x.shape[-1],dy.shape[-1])), (xs, ds))[0]
def rows(x, dy):
    # 3 column-shifted copies, row shifts as dots over contiguous row blocks
    B,H,W,C = x.shape; O = dy.shape[-1]
    xp = jnp.pad(x, ((0,0),(1,1),(1,1),(0,0)))
    out = []
    for j in range(3):
        xj = xp[:, :, j:j+W]  # B,H+2,W,C
        for i in range(3):
            out.append(jax.lax.dot_general(xj[:, i:i+H].reshape(-1, C), dy.reshape(-1, O), cr))
    outs = jnp.stack(out).reshape(3,3,C,O)  # (j,i)
    return outs.transpose(1,0,2,3)
def conv_t(x, dy):
    lhs=x.transpose(3,1,2,0); rhs=dy.transpose(1,2,0,3)
    return jax.lax.conv_general_dilated(lhs,rhs,(1,1),((1,1),(1,1)),dimension_numbers=DN).transpose(1,2,0,3)
def looped(f, x, dy, n=8):
    def body(i, acc): return acc + f(x + i.astype(x.dtype)*1e-3, dy)
    return jax.lax.fori_loop(0, n, body, jnp.zeros((3,3,x.shape[-1],dy.shape[-1])))
rng=np.random.default_rng(0)
for B,H,C,O in [(64,32,16,16),(64,16,32,32),(64,8,64,64),(64,32,64,64),(128,16,256,256)]:
    x=jnp.asarray(rng.normal(size=(B,H,H,C)),jnp.float32); dy=jnp.asarray(rng.normal(size=(B,H,H,O)),jnp.float32)
    ref = taps(x, dy)
    res = []
    for name, f in [("taps",taps),("im2col",im2col),("micro8",micro),("micro16",partial(micro,m=16)),("rows",rows),("conv_t",conv_t)]:
        np.testing.assert_allclose(f(x,dy), ref, rtol=1e-3, atol=1e-2)
        g = jax.jit(partial(looped, f)); g(x,dy).block_until_ready()
        ts=[]
        for _ in range(3):
            t=time.perf_counter(); g(x,dy).block_until_ready(); ts.append((time.perf_counter()-t)/8*1e3)
        res.append(f"{name} {statistics.median(ts):.2f}")
    print(B,H,C,O, " | ".join(res))
