"""Calibrate the sim to a real camera: fit the camera and the look (`envs.look`) to a lab's real start frames.

`mvla-sim calibrate` (`calibrate.run`); nothing in the package imports this one but the command line.
"""
