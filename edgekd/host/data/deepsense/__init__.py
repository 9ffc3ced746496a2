"""Import a DeepSense 6G scenario folder into the edgekd dataset format.

A scenario folder holds one CSV (``scenarioN.csv``) whose rows are frames and
whose columns name per-frame files relative to the folder (``./unit1/...``):

==================== ===================================================================
column               file
==================== ===================================================================
``unit1_rgb``        camera image (any format Pillow reads)
``unit1_radar``      raw FMCW cube, complex ``[4 Rx, samples, chirps]`` (.mat key ``data``, or .npy)
``unit1_lidar_SCR``  preprocessed LiDAR scan, a 216-vector in metres (.mat)
``unit1_lidar``      LiDAR point cloud (.ply, ASCII or binary), metres, sensor at the origin
``unit1_pwr_60ghz``  received power of every beam (.txt, 64 numbers)
``unit1_beam``       best beam, 1-based (used when there is no power column; checked otherwise)
``unit1_loc``        base-station GPS latitude/longitude (.txt)
``unit2_loc[_cal]``  user GPS latitude/longitude (.txt)
``seq_index``        drive (sequence) id; splits are by sequence
==================== ===================================================================

Each modality whose column is present runs through the same preprocessing as
the synthetic scenario (``edgekd.host.data.camera/radar/lidar``), so a model sees
the same kind of input from either source. Rows whose power vector holds NaN
are dropped and counted; every missing or unreadable file is collected and
reported in one error before anything is written.

The importer is four modules: ``files`` (one reader per file format),
``scenario`` (the CSV, its columns, the import settings and the collected
problems), ``convert`` (per-modality preprocessing into stored frames) and
``importer`` (the folder walk: labels, drives, times, conditions, then the
dataset writer).
"""

from edgekd.host.data.deepsense.convert import EARTH_RADIUS_M, latlon_to_metres
from edgekd.host.data.deepsense.files import (
    read_image,
    read_latlon,
    read_lidar_scr,
    read_mat,
    read_ply_points,
    read_radar_cube,
    read_vector_txt,
)
from edgekd.host.data.deepsense.importer import import_deepsense, parse_time_of_day
from edgekd.host.data.deepsense.scenario import COLUMNS, ImportConfig, find_csv, read_csv_rows

__all__ = [
    "COLUMNS", "EARTH_RADIUS_M", "ImportConfig", "find_csv", "import_deepsense", "latlon_to_metres",
    "parse_time_of_day", "read_csv_rows", "read_image", "read_latlon", "read_lidar_scr", "read_mat",
    "read_ply_points", "read_radar_cube", "read_vector_txt",
]
