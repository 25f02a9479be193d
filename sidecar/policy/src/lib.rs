//! kproxy policy engine: decides, per request, what ACLs allow, how long quotas throttle and where routes send.
