"""Monocular depth suites (NYUd v2, KITTI Eigen): readers, protocol, metrics. See README.md."""
