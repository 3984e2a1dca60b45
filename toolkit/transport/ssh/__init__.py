"""SSH for devices: verified connections, agent tunnels, the one-shot `ssh` transport, bootstrap.

Submodules import paramiko; import them where SSH is used, not at toolkit import time.
"""
