//! Runtime: load PTX, check shapes, launch.
